"""The whole schema: every feature's tables on one metadata. Alembic compares the migrations
(db/migrations/versions, which build every database) with it; import `Base` from here when every
table must be known (tests that empty the database, the demo loader)."""

from __future__ import annotations

from idguard.accountability import models as accountability_models
from idguard.biometrics import models as biometrics_models
from idguard.citizens import models as citizens_models
from idguard.db import common
from idguard.db.base import Base
from idguard.offline import models as offline_models
from idguard.registry import models as registry_models
from idguard.verification import models as verification_models
from idguard.watchlist import models as watchlist_models

FEATURE_MODELS = (
    common,
    registry_models,
    biometrics_models,
    verification_models,
    watchlist_models,
    citizens_models,
    accountability_models,
    offline_models,
)

__all__ = ["FEATURE_MODELS", "Base"]
