"""Sierra Chart DTC: sans-IO codec, asyncio client, exchange simulator."""
