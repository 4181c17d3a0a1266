"""`pond serve` (the REST server) and `pond tokens ...` (its API tokens)."""

from __future__ import annotations

import argparse

from core import serving, tokens
from core.cli._common import actor, add_command, emit, table, workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "serve",
        _serve,
        help="serve every model's champion over REST",
        description="Serve, for every model whose 'champion' alias points at an approved "
        "version, POST /v1/models/NAME/predict, plus GET /v1/models, GET /health and "
        "GET /openapi.json. Clients send 'Authorization: Bearer <token>' (see `pond tokens "
        "create`). An alias move is picked up within a few seconds without a restart. Every "
        "request is logged as Parquet under POND_HOME/inference/. Stop with Ctrl-C or SIGTERM.",
    )
    p.add_argument("--host", default=serving.DEFAULT_HOST,
                   help=f"address to listen on (default {serving.DEFAULT_HOST}; 0.0.0.0 for "
                   "every interface)")
    p.add_argument("--port", type=int, default=serving.DEFAULT_PORT,
                   help=f"port to listen on (default {serving.DEFAULT_PORT})")
    p.add_argument("--workers", type=int, default=1,
                   help="processes answering requests (default 1; each predicts with one "
                   "thread, so use about one per CPU core)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="how much the server prints (default info)")

    tok = sub.add_parser("tokens", help="API tokens for the REST server (admin)",
                         description="Create, list and revoke the bearer tokens that clients "
                         "of `pond serve` send. Only an admin may manage tokens.")
    tok_sub = tok.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    p = add_command(tok_sub, "create", _create,
                    help="make a token and print it once (only its hash is kept)")
    p.add_argument("name", help="what the token is for, e.g. checkout-service")
    add_command(tok_sub, "list", _list, help="list tokens (never their secrets)")
    p = add_command(tok_sub, "revoke", _revoke,
                    help="revoke a token for good; servers refuse it within seconds")
    p.add_argument("id", type=int, help="the token's id, from `pond tokens list`")


def _serve(args: argparse.Namespace) -> None:
    serving.serve(workspace(args), host=args.host, port=args.port, workers=args.workers,
                  log_level=args.log_level)


def _create(args: argparse.Namespace) -> None:
    ws = workspace(args)
    info, secret = tokens.create_token(ws, args.name, actor=actor(args, ws))
    emit(args, {**info.to_dict(), "secret": secret}, [
        f"token {info.id} ({info.name}):",
        f"  {secret}",
        "Copy it now: Pond keeps only its hash and cannot show it again.",
    ])


def _list(args: argparse.Namespace) -> None:
    ws = workspace(args)
    found = tokens.list_tokens(ws, actor=actor(args, ws))
    emit(args, [t.to_dict() for t in found], table(
        [[t.id, t.name, t.display, t.created_by, f"{t.created_at:%Y-%m-%d %H:%M}",
          "revoked" if t.revoked_at else "active"] for t in found],
        ["id", "name", "token", "created by", "created", "state"],
    ))


def _revoke(args: argparse.Namespace) -> None:
    ws = workspace(args)
    info = tokens.revoke_token(ws, args.id, actor=actor(args, ws))
    emit(args, info.to_dict(), f"revoked token {info.id} ({info.name})")
