"""`pond users ...`: local accounts and roles."""

from __future__ import annotations

import argparse
import getpass
import os

from core import auth
from core.cli._common import actor, add_command, emit, table, workspace


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="local accounts and roles")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    p = add_command(users_sub, "list", _list, help="list accounts")
    p = add_command(
        users_sub,
        "add",
        _add,
        help="add an account (the first account of a workspace needs no --user)",
    )
    p.add_argument("name", help="account name")
    p.add_argument("--role", required=True, choices=[r.value for r in auth.Role], help="its role")
    p.add_argument(
        "--password",
        help="its password (default: $POND_PASSWORD, else asked on the terminal)",
    )
    p = add_command(users_sub, "disable", _disable, help="disable an account")
    p.add_argument("name", help="account name")
    p = add_command(users_sub, "enable", _enable, help="enable an account")
    p.add_argument("name", help="account name")
    p = add_command(users_sub, "set-role", _set_role, help="change an account's role")
    p.add_argument("name", help="account name")
    p.add_argument("role", choices=[r.value for r in auth.Role], help="the new role")
    p = add_command(users_sub, "set-password", _set_password, help="change an account's password")
    p.add_argument("name", help="account name")
    p.add_argument("--password", help="new password (default: $POND_PASSWORD, else asked)")


def _password(args: argparse.Namespace) -> str:
    return args.password or os.environ.get("POND_PASSWORD") or getpass.getpass("Password: ")


def _user_dict(u: auth.User) -> dict:
    return {"name": u.name, "role": u.role.value, "disabled": u.disabled, "created_at": u.created_at}


def _list(args: argparse.Namespace) -> None:
    users = auth.list_users(workspace(args))
    emit(
        args,
        [_user_dict(u) for u in users],
        table([[u.name, u.role.value, "yes" if u.disabled else ""] for u in users],
              ["name", "role", "disabled"]),
    )


def _add(args: argparse.Namespace) -> None:
    ws = workspace(args)
    who = auth.SYSTEM if auth.count_users(ws) == 0 else actor(args, ws)
    user = auth.add_user(ws, args.name, args.role, _password(args), actor=who)
    emit(args, _user_dict(user), f"added user {user.name} ({user.role.value})")


def _disable(args: argparse.Namespace) -> None:
    ws = workspace(args)
    user = auth.set_disabled(ws, args.name, True, actor=actor(args, ws))
    emit(args, _user_dict(user), f"disabled user {user.name}")


def _enable(args: argparse.Namespace) -> None:
    ws = workspace(args)
    user = auth.set_disabled(ws, args.name, False, actor=actor(args, ws))
    emit(args, _user_dict(user), f"enabled user {user.name}")


def _set_role(args: argparse.Namespace) -> None:
    ws = workspace(args)
    user = auth.set_role(ws, args.name, args.role, actor=actor(args, ws))
    emit(args, _user_dict(user), f"user {user.name} is now {user.role.value}")


def _set_password(args: argparse.Namespace) -> None:
    ws = workspace(args)
    auth.set_password(ws, args.name, _password(args), actor=actor(args, ws))
    emit(args, {"name": args.name}, f"changed the password of {args.name}")
