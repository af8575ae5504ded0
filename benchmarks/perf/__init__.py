"""Performance and robustness runs: build, query, FAISS, Ray, the server under load, killed builds."""
