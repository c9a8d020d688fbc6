# Creates the filesync system user the system unit runs as; starts and enables nothing.
getent group filesync >/dev/null || groupadd --system filesync
getent passwd filesync >/dev/null || useradd --system --gid filesync \
    --home-dir /var/lib/filesyncd --no-create-home --shell /sbin/nologin \
    --comment "filesync daemon" filesync
exit 0
