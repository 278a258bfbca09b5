#!/bin/sh
# The container's entrypoint (deploy/Dockerfile).
#   docker run IMAGE                      berth serve
#   docker run IMAGE serve|user ...|-h    berth with those arguments (anything that is not a command)
#   docker run IMAGE berth ...|sh|chown   that command as given
# It execs, so that the command is PID 1 and gets SIGTERM itself.
set -e
if [ "$#" -eq 0 ]; then
  set -- berth serve
elif [ "${1#-}" != "$1" ] || ! command -v "$1" >/dev/null 2>&1; then
  set -- berth "$@"
fi

# A volume that registry:2 filled (it runs as root) is owned by root; an unprivileged Berth could read it
# but not add to it. Say what to do instead of failing on the first push.
if [ "$1" = berth ] && { [ "$#" -eq 1 ] || [ "$2" = serve ]; } && [ "$(id -u)" != 0 ]; then
  data=/var/lib/registry
  for dir in "$data" "$data/docker/registry/v2" "$data/docker/registry/v2/blobs" "$data/docker/registry/v2/repositories"; do
    if [ -d "$dir" ] && [ ! -w "$dir" ]; then
      cat >&2 <<MSG
berth: $dir is not writable by this container's user ($(id -u):$(id -g)); it belongs to $(stat -c %u:%g "$dir").
A volume written by registry:2, which runs as root, must be given to Berth's user once:

  docker run --rm --user 0 -v VOLUME:$data IMAGE chown -R $(id -u):$(id -g) $data

(with Compose: docker compose run --rm --user 0 SERVICE chown -R $(id -u):$(id -g) $data)
or run Berth as root as registry:2 does: docker run --user 0 ..., or \`user: "0"\` in compose.yaml.
MSG
      exit 1
    fi
  done
fi
exec "$@"
