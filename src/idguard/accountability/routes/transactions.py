"""POST /api/v1/transactions: units report what they did on the strength of a check."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from idguard.accountability import transactions
from idguard.accountability.routes.deps import UnitTxDep, window
from idguard.accountability.schemas import ItemError, TransactionResult, TransactionsIn, TransactionsOut
from idguard.api.deps import get_settings
from idguard.api.schemas import problem_responses

router = APIRouter(prefix="/api/v1", tags=["accountability (units)"])


@router.post(
    "/transactions", status_code=200, response_model=TransactionsOut, responses=problem_responses(401, 422)
)
def report_transactions(body: TransactionsIn, tx: UnitTxDep) -> Response:
    """Report transactions you performed on the strength of a check (opened an account, checked
    a guest in): up to 1,000 per call.

    Each item is answered on its own, in order: `accepted` (stored) or `rejected` with `errors`
    naming the item's bad fields; one bad item does not stop the others. Items are idempotent
    per `ref`: sending the same item again is `accepted` and changes nothing; a stored `ref`
    with other content (time, number, purpose or check_id) is `rejected` — a ref names one
    transaction. A transaction in a month already closed is rejected.

    Each transaction is classified against **your own** checks of that number within
    `IDGUARD_CHECK_WINDOW_HOURS` (default 24) before it: `compliant` (latest check `valid`, no
    alert), `unchecked`, `checked_after`, `accepted_invalid` (latest check `invalid` or
    `mismatch`), `ignored_alert` (latest check carried an alert). The class in the answer is
    provisional: a check made after the transaction may still arrive, and the class is final
    when the month is closed. The id number is stored only as the check log keeps it: masked,
    and as a keyed hash. Send an `Idempotency-Key` to have a retry answered as the first call."""
    settings = get_settings(tx.request)

    def run() -> TransactionsOut:
        results = transactions.submit(
            tx.session,
            unit_code=tx.unit.code,
            items=body.items,
            now=tx.now,
            window=window(tx.request),
            hash_key=settings.check_hash_key,
        )
        return TransactionsOut(
            results=[
                TransactionResult(
                    ref=r.ref,
                    status=r.status,
                    errors=[ItemError(field=e.field, detail=e.detail) for e in r.errors],
                    classification=r.classification,
                )
                for r in results
            ]
        )

    return tx.write(run, body=body, status_code=200)
