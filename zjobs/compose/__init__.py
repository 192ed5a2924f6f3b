"""The compose layer: links and pipelines, which combine processors of any kind."""
