"""asyncci: a continuous-integration server in one asyncio process."""
