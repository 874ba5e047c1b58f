"""An in-process stand-in for the Anthropic Messages API, served over real HTTP.

It plays Anthropic, so it imports none of the project's apps: only the stdlib and aiohttp.
The official ``anthropic`` SDK, pointed at it with ``base_url=``, must not be able to tell the
difference for everything the project uses (see ../shared/ANTHROPIC_API.md, the contract).
Start it with ``python manage.py anthropic_emulator`` or ``process.EmulatorProcess``.
"""
