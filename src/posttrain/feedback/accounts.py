"""Making user accounts, one rule for every way in: the admin's users page, `feedback init` (the first admin) and
`feedback user` (raters from the command line). A user name is what people type at the login form, so it is
plain: 1 to 64 letters, digits and `. _ @ + -` (an e-mail address works)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from posttrain.errors import DataError
from posttrain.feedback.db import ROLES, Audit, User
from posttrain.feedback.db import Session as LoginSession
from posttrain.feedback.security import hash_password

USERNAME = re.compile(r"[\w.@+-]{1,64}")
MIN_PASSWORD = 8


def check_username(username: str) -> None:
    """DataError when `username` is not a plain login name."""
    if not USERNAME.fullmatch(username):
        raise DataError(f"user name {username!r}: use 1 to 64 letters, digits and . _ @ + - (no spaces)")


def check_password(username: str, password: str) -> None:
    """DataError when `password` is too short for an account."""
    if len(password) < MIN_PASSWORD:
        raise DataError(f"user {username!r}: the password needs {MIN_PASSWORD} characters or more")


def check_account(username: str, password: str, role: str) -> None:
    """DataError saying which rule a new account breaks."""
    check_username(username)
    check_password(username, password)
    if role not in ROLES:
        raise DataError(f"user {username!r}: role {role!r} is not one of {', '.join(ROLES)}")


def add_user(s: Session, username: str, password: str, role: str, by: int | None, how: str) -> User:
    """A new active user, audited as made `how` (`page`, `init`, `cli`) by user `by`; DataError when a rule is
    broken or the name is taken."""
    check_account(username, password, role)
    if s.scalar(select(User.id).where(User.username == username)) is not None:
        raise DataError(f"user {username!r} exists already; pick another name")
    user = User(username=username, password_hash=hash_password(password), role=role, active=True)
    s.add(user)
    s.add(Audit(user_id=by, action="user.create", target=f"user:{username}", detail={"role": role, "by": how}))
    return user


def reset_password(s: Session, username: str, password: str, how: str) -> None:
    """A new password for an existing user, audited; their login sessions end (a running server notices within
    its PrincipalCache's few seconds). API tokens stay: each is revoked on its owner's /tokens page."""
    check_password(username, password)
    user = s.scalar(select(User).where(User.username == username))
    if user is None:
        raise DataError(f"user {username!r}: no such user (add one with: posttrain feedback user --name {username})")
    user.password_hash = hash_password(password)
    s.query(LoginSession).filter(LoginSession.user_id == user.id).delete()
    s.add(Audit(user_id=None, action="user.password_reset", target=f"user:{username}", detail={"by": how}))
