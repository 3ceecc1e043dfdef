"""The local stack: real PostgreSQL, Redis and an AWS emulator on 127.0.0.1, plus the five
services. `make up` and the test suite start it through the same code."""
