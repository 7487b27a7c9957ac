"""Settings for the whole suite."""

import os

# Real argon2id, with argon2-cffi's cheapest parameters: the suite makes and checks hundreds of
# passwords (each sign-in of each role in the permission matrix), at 0.2-0.3 s apiece otherwise.
# Processes the tests start (the cloud in the system tests) inherit it.
os.environ.setdefault("GATEHOUSE_TEST_CHEAP_HASHES", "1")
