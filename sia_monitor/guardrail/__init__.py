"""Acting on P(correct): the policy that decides stop / resample / accept (`policy`), the guarded run that
applies it attempt by attempt (`guarded`), over a live backend (`live`) or a saved trace (`replay`)."""
