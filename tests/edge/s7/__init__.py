"""Tests of the S7 connector against snap7's own server."""
