"""sweagent-oec: on-policy expert corrections for LM software-engineering agents."""

import os

# litellm reads this at import: its bundled price map, never a download at run time (offline
# machines would wait ~10 s on retries), and a faster, quieter import. Set before any submodule
# can import litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
