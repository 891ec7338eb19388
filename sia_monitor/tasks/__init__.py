"""What is asked and what counts as an answer: answer spaces and parsing (`answers`), the prompt and the
answer-forcing suffix (`prompts`), and the benchmarks as data (`benchmarks`). No torch here."""
