"""An in-process stand-in for the Anthropic Claude API (as of 2026-12-01), served over real HTTP.

It plays Anthropic, so it imports none of the project's apps: only the stdlib and aiohttp.
The official ``anthropic`` SDK, pointed at it with ``base_url=``, must not be able to tell the
difference for everything the project uses (see ../shared/ANTHROPIC_API.md, the contract, and
docs/emulator.md for what is implemented and the ``[[emulator:…]]`` prompt directives).
Start it with ``python manage.py anthropic_emulator`` or ``process.EmulatorProcess``.

Layout: ``server`` builds the app from ``routes/`` (messages, batches, models, control) and
``http_layer`` (auth, errors, headers, log); ``state`` holds everything mutable. A request is
checked by ``validation`` and ``rules`` against ``model_catalog``, priced in tokens by
``tokens`` and ``prompt_cache``, admitted by ``buckets``, answered by ``generation`` (with
``thinking`` and ``tools``), shaped by ``responses`` / ``streaming`` and billed in ``ledger``.
"""
