{
  "targets": [
    {
      "target_name": "berth_memory",
      "sources": ["memory.cc"],
      "cflags_cc": ["-O2", "-Wall"]
    }
  ]
}
