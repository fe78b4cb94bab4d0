"""What ECR accepts, and where its pull through cache may be led, written down once.

The gateway checks its configuration against these rules before ECR could refuse a call, and
the emulator enforces them as ECR does; both import this package, neither imports the other.
The few things both processes do alike live here too (the loopback check, malloc's controls,
private folders for blob bytes).
"""
