"""Container start-up for images with ``deploy.pre_exec``: run each command, then exec the entrypoint.

Copied into the image as /opt/cloud-deploy/launch.py and run by the image's own Python, so it
uses the standard library only and old syntax. Commands come from launch.json as argument
lists and are never given to a shell.
"""

import json
import os
import subprocess
import sys

LAUNCH_FILE = "/opt/cloud-deploy/launch.json"


def main():
    with open(LAUNCH_FILE) as handle:
        launch = json.load(handle)
    for command in launch.get("pre_exec", []):
        print("cloud-deploy: pre_exec " + json.dumps(command), flush=True)
        code = subprocess.call(command)
        if code != 0:
            print("cloud-deploy: pre_exec %s exited with %d" % (json.dumps(command), code), file=sys.stderr)
            sys.exit(code)
    entrypoint = launch["entrypoint"] + sys.argv[1:]
    os.execvp(entrypoint[0], entrypoint)


if __name__ == "__main__":
    main()
