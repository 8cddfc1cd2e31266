"""chatstate: durable conversation state for multi-turn LLM chat."""
