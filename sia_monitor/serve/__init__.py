"""`sia-monitor serve`: an OpenAI-compatible server whose responses carry the monitor's step entropy and
P(correct) in a namespaced `sia` field. `protocol` (the wire format), `engine` (the one worker and the line of
requests), `generation` (a request's monitored generations), `app` (the FastAPI routes)."""
