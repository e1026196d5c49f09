#!/usr/bin/env bash
# Make sure the local services that the tests need are reachable.
# The core tests need none yet; the stream and state issues add Redis and NATS here.
set -euo pipefail
echo "services: none needed by the current test suite"
