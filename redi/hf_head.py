"""Deprecated: ``redi.hf_head`` moved to ``redi.integrations.transformers``; this alias
re-exports it for one release, with a DeprecationWarning on import."""

import warnings

from redi.integrations.transformers import HeadError, head_inputs, logit_softcap, output_head  # noqa: F401

warnings.warn("redi.hf_head is deprecated, import from redi.integrations.transformers",
              DeprecationWarning, stacklevel=2)
