{
  "targets": [
    {
      "target_name": "berth_sha256",
      "sources": ["sha256.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
