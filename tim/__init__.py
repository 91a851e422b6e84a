"""What Tim's stages share: config parsing, the conversation schema, the persona, model files,
and the chat backends that synth and serve both talk to."""

import os

# Nothing Tim runs may reach the network: no hub downloads, no telemetry, no Gradio analytics.
# Set here, at the first import of the project, because huggingface_hub and gradio read these
# when they are imported.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}.items():
    os.environ.setdefault(_key, _value)


class TimError(Exception):
    """A problem the user can fix (bad config, missing model, bad data row): shown as one line."""
