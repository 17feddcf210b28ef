"""Adapters of the fused losses to other libraries: ``redi.integrations.transformers`` (a
Hugging Face model's head inputs and logit softcap; core install, no import of
transformers) and ``redi.integrations.trl`` (TRL's trainers; extra ``trl``)."""
