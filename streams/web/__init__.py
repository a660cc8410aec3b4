"""The worker's HTTP face: the server of the batched runner (`server`), the documents both runners answer
with (`documents`: pure functions from stored state to JSON), and which worker owns a person (`owners`).

`documents` and `owners` serve both runners and import only `schemas` and `streams.rules`; `server` is the
batched runner's HTTP server, given the runner it serves.
"""
