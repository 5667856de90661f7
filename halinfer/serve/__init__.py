"""OpenAI-compatible HTTP server on AsyncLLM: ``halinfer serve MODEL`` (FastAPI + uvicorn).

app.py builds the FastAPI app around an engine; protocol.py holds the request models;
params.py turns a request into prompts and SamplingParams; completions.py / chat.py shape
the responses; streaming.py runs one request's engine generators; metrics.py is the
Prometheus side; errors.py the OpenAI error shape; cli.py parses arguments and runs uvicorn.
"""
