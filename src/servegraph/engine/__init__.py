"""Compile a graph spec into a plan and run it, synchronously or on asyncio."""
