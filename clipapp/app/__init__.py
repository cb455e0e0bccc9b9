"""The front ends and what they share: the actions (`actions/`, one typed result each), the CLI (`cli/`: a table of
commands and a renderer per result), the Gradio page (`ui/`), the `/v1` HTTP API, serving, the model flags both
front ends take (`options`), the Search tab's picks, per-session state and background jobs."""
