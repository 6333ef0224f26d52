"""edgecloud-qa: cloud layer (never imports edge/).

- :mod:`cloud.wire` — the shapes on the wire, shared by edge client and gateway
- :mod:`cloud.envelope` — seal/unseal: JSON -> zstd -> AES-256-GCM, the key type
- :mod:`cloud.certs` — `ecqa cloud init` material: CA, server/edge certificates, AES key
- :mod:`cloud.gateway` — the mutual-TLS HTTPS gateway (checks, metrics, replay cache)
- :mod:`cloud.backend` — OpenAI-compatible backend client; the embedded default backend
- :mod:`cloud.backend_server` — the embedded backend's OpenAI-compatible server (the cloud GGUF via reading/)
- :mod:`cloud.prompting` — which shared prompts (reading/) go to the backend, and reply parsing
- :mod:`cloud.cloud_answerer` — ``CloudAnswerer``, the edge-side Haystack component
- :mod:`cloud.gguf_to_hf` — GGUF -> safetensors for vLLM (run with the vLLM environment)
"""
