import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE","ratelimit_project.settings")
django.setup()
import tempfile
from pathlib import Path
from django.conf import settings
from ratelimit_project import redis as pr
s = pr.PrivateRedis(Path(tempfile.mkdtemp())).start()
settings.EMBEDDED_REDIS=False; settings.REDIS_URL=s.url; pr.reset_clients()
import logging; logging.disable(logging.WARNING)
import tests.queueing.test_limiter_simulation as m
for bias in (0.7, 1.0, 1.3):
    for seed in range(1, 6):
        pr.get_redis().flushall()
        print(bias, seed, m.simulate(bias=bias, seed=seed))
s.stop()
