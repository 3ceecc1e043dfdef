"""The local token issuer: a Cognito user pool on the AWS emulator (moto), as in AWS.

One pool with one app client (no secret; ADMIN_NO_SRP_AUTH for the tools here,
USER_PASSWORD_AUTH for the services' own sign-in), the groups `admins` and `services`, a
shopper `demo-user`, an admin `demo-admin`, and one identity per service
(`service-<name>`, in `services`). Passwords are generated into the state folder
(`identity.json`, readable by its owner only), never written to git. Provisioning is safe
to repeat: after an emulator restart the pool is made again and the same passwords reused.

moto signs every pool's tokens with one fixed key that ships with it (kid "dummy"): these
tokens are good for this emulator and nowhere else.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
POOL_NAME = "cloudshelf-local"
CLIENT_NAME = "cloudshelf-local"
ADMIN_GROUP = "admins"
SERVICE_GROUP = "services"
SHOPPER_USER = "demo-user"
ADMIN_USER = "demo-admin"
STATE_FILE = "identity.json"


def service_user(service: str) -> str:
    return f"service-{service}"


def _password() -> str:
    # Cognito's default policy: 8+ characters with upper and lower case, a digit, a symbol.
    return f"{secrets.token_urlsafe(18)}Aa1!"


@dataclass
class LocalIdentity:
    endpoint: str
    state_file: Path
    pool_id: str = ""
    client_id: str = ""
    passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, state_dir: Path, endpoint: str) -> LocalIdentity:
        path = state_dir / STATE_FILE
        identity = cls(endpoint, path)
        if path.exists():
            saved = json.loads(path.read_text())
            identity.pool_id = saved.get("pool_id", "")
            identity.client_id = saved.get("client_id", "")
            identity.passwords = dict(saved.get("passwords", {}))
        return identity

    def save(self) -> None:
        self.state_file.touch(mode=0o600)
        self.state_file.chmod(0o600)
        self.state_file.write_text(
            json.dumps(
                {"pool_id": self.pool_id, "client_id": self.client_id, "passwords": self.passwords},
                indent=2,
            )
        )

    # --- what services are told ----------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The `iss` moto writes in tokens: the AWS form, not the emulator's address."""
        return f"https://cognito-idp.{REGION}.amazonaws.com/{self.pool_id}"

    @property
    def jwks_url(self) -> str:
        return f"{self.endpoint}/{self.pool_id}/.well-known/jwks.json"

    def service_env(self, service: str) -> dict[str, str]:
        """The auth settings of one service process (empty before provisioning)."""
        if not self.pool_id:
            return {}
        user = service_user(service)
        return {
            "CLOUDSHELF_AUTH_ISSUER": self.issuer,
            "CLOUDSHELF_AUTH_JWKS_URL": self.jwks_url,
            "CLOUDSHELF_AUTH_CLIENT_IDS": self.client_id,
            "CLOUDSHELF_AUTH_SERVICE_USERNAME": user,
            "CLOUDSHELF_AUTH_SERVICE_PASSWORD": self.passwords.get(user, ""),
        }

    # --- the emulator ----------------------------------------------------------------------

    def is_local(self) -> bool:
        host = urllib.parse.urlparse(self.endpoint).hostname or ""
        return host in ("127.0.0.1", "localhost", "::1")

    def _idp(self) -> Any:
        if not self.is_local():
            raise RuntimeError(f"{self.endpoint} is not the local emulator: refusing")
        return boto3.client(
            "cognito-idp",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def provision(self, services: Iterable[str]) -> list[str]:
        idp = self._idp()
        done = []
        pools = idp.list_user_pools(MaxResults=60)["UserPools"]
        pool = next((p for p in pools if p["Name"] == POOL_NAME), None)
        if pool is None:
            pool = idp.create_user_pool(PoolName=POOL_NAME)["UserPool"]
            done.append(f"identity: user pool {pool['Id']} created")
        self.pool_id = pool["Id"]
        clients = idp.list_user_pool_clients(UserPoolId=self.pool_id, MaxResults=60)
        client = next(
            (c for c in clients["UserPoolClients"] if c["ClientName"] == CLIENT_NAME), None
        )
        if client is None:
            client = idp.create_user_pool_client(
                UserPoolId=self.pool_id,
                ClientName=CLIENT_NAME,
                GenerateSecret=False,
                ExplicitAuthFlows=[
                    "ADMIN_NO_SRP_AUTH",
                    "ALLOW_ADMIN_USER_PASSWORD_AUTH",
                    "ALLOW_USER_PASSWORD_AUTH",
                    "ALLOW_REFRESH_TOKEN_AUTH",
                ],
            )["UserPoolClient"]
            done.append(f"identity: app client {client['ClientId']} created")
        self.client_id = client["ClientId"]
        existing = {g["GroupName"] for g in idp.list_groups(UserPoolId=self.pool_id)["Groups"]}
        for group in (ADMIN_GROUP, SERVICE_GROUP):
            if group not in existing:
                idp.create_group(UserPoolId=self.pool_id, GroupName=group)
        self.ensure_user(SHOPPER_USER, idp=idp)
        self.ensure_user(ADMIN_USER, [ADMIN_GROUP], idp=idp)
        for service in services:
            self.ensure_user(service_user(service), [SERVICE_GROUP], idp=idp)
        done.append(f"identity: users {SHOPPER_USER}, {ADMIN_USER} (admins), service-* (services)")
        self.save()
        return done

    def ensure_user(self, name: str, groups: Sequence[str] = (), *, idp: Any = None) -> None:
        """A confirmed user with a permanent password (kept in the state file) in `groups`."""
        idp = idp or self._idp()
        password = self.passwords.setdefault(name, _password())
        try:
            idp.admin_create_user(
                UserPoolId=self.pool_id,
                Username=name,
                TemporaryPassword=password,
                MessageAction="SUPPRESS",
            )
        except idp.exceptions.UsernameExistsException:
            pass
        idp.admin_set_user_password(
            UserPoolId=self.pool_id, Username=name, Password=password, Permanent=True
        )
        for group in groups:
            idp.admin_add_user_to_group(UserPoolId=self.pool_id, Username=name, GroupName=group)
        self.save()

    def token(self, name: str, *, kind: str = "AccessToken") -> str:
        """A fresh token of the user (`AccessToken`, or `IdToken`), valid one hour."""
        answer = self._idp().admin_initiate_auth(
            UserPoolId=self.pool_id,
            ClientId=self.client_id,
            AuthFlow="ADMIN_NO_SRP_AUTH",
            AuthParameters={"USERNAME": name, "PASSWORD": self.passwords[name]},
        )
        return str(answer["AuthenticationResult"][kind])

    def subject(self, name: str) -> str:
        """The user's id (`sub`), which is what services see as the caller."""
        user = self._idp().admin_get_user(UserPoolId=self.pool_id, Username=name)
        return next(str(a["Value"]) for a in user["UserAttributes"] if a["Name"] == "sub")
