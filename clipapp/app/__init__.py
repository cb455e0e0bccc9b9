"""The front ends and what they share: the actions (one typed result each), the CLI, the Gradio page (`ui/`), the
`/v1` HTTP API, serving, per-session state and background jobs."""
