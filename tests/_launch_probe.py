"""A worker for test_launchers: writes its arguments and torch's rendezvous variables, then sleeps."""
import json
import os
import sys
import time

out, sleep_s = sys.argv[1], float(sys.argv[2])
keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
with open(out, "w") as f:
    json.dump({"argv": sys.argv[1:], "sid": os.getsid(0), "pid": os.getpid(),
               "env": {k: os.environ.get(k) for k in keys}}, f)
time.sleep(sleep_s)
