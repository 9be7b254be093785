"""Public loss declarations (遗失声明): anyone reads and verifies them, no credentials."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from idguard.api.deps import SessionDep
from idguard.api.schemas import problem_responses
from idguard.citizens import reports
from idguard.citizens.routes.deps import KeysDep
from idguard.citizens.schemas import DeclarationKeyOut, DeclarationKeysOut, DeclarationOut

router = APIRouter(prefix="/api/v1/declarations", tags=["loss declarations (public)"])


@router.get("/keys", response_model=DeclarationKeysOut)
def keys(keys: KeysDep) -> DeclarationKeysOut:
    """The Ed25519 public keys declarations are signed with. The `signing` key signs new ones;
    the others are retired keys, listed so that older declarations stay verifiable."""
    return DeclarationKeysOut(
        keys=[
            DeclarationKeyOut(key_id=k.key_id, public_key=k.public_key, signing=k.signing)
            for k in keys.declarations.public_keys()
        ]
    )


@router.get("/{declaration_no}", response_model=DeclarationOut, responses=problem_responses(404, 422))
def declaration(
    declaration_no: Annotated[str, Path(min_length=1, max_length=32)], session: SessionDep
) -> Response:
    """A published loss declaration, exactly as signed: every field but `signature` is covered
    by the Ed25519 signature of key `key_id`, over the canonical JSON of those fields (keys
    sorted, separators `,` and `:` with no spaces, UTF-8, non-ASCII as is). docs/citizens.md has
    a 20-line script that checks one offline."""
    found = reports.declaration(session, declaration_no)
    body = {**json.loads(found.payload), "signature": found.signature}
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json"
    )
