"""Deprecated: ``redi.model_logits`` moved to ``redi.integrations.transformers``; this alias
re-exports it for one release, with a DeprecationWarning on import."""

import warnings

from redi.integrations.transformers import (  # noqa: F401
              SOFTCAP_FIELD,
              UNSUPPORTED_SCALE_FIELDS,
              model_softcap,
              with_model_softcap,
)

warnings.warn("redi.model_logits is deprecated, import from redi.integrations.transformers",
              DeprecationWarning, stacklevel=2)
