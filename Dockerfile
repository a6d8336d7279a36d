# The KEZ chat server binaries in one small image: kez-chat-server,
# kez-sig-server, the optional kez-relay and the kez CLI. NATS is not in it: the chat-server
# connects to the operator's NATS (NATS_URL). docker-compose.yml runs the
# two servers from this image; docs/operators.md §8 explains the setup.
#
#   docker build -t kez-chat .
#   docker run --rm kez-chat kez-chat-server --help

# Build: static binaries (the SQLite driver is pure Go, so no cgo).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ \
        ./cmd/kez-chat-server ./cmd/kez-sig-server ./cmd/kez-relay ./cmd/kez

# Run: a small base with CA certificates (for TLS to NATS and peers) and a
# shell for health checks; an unprivileged user owns the state folder.
FROM alpine:3.22
RUN adduser -D -H -u 10001 -h /var/lib/kez kez \
 && mkdir -p /var/lib/kez \
 && chown kez:kez /var/lib/kez \
 && chmod 0700 /var/lib/kez
COPY --from=build /out/ /usr/local/bin/
USER kez
WORKDIR /var/lib/kez
# State (SQLite files, the callout keys) lives here; mount a volume.
VOLUME /var/lib/kez
# In a container the servers listen on every interface, with their state in
# the volume. Flags and the compose file may override any of these.
ENV KEZ_LISTEN=0.0.0.0:8080 \
    KEZ_CHAT_DB=/var/lib/kez/chat.db \
    KEZ_CHAT_KEYS=/var/lib/kez/chat-keys \
    KEZ_CHAT_LOG_FORMAT=json \
    KEZ_SIG_LISTEN=0.0.0.0:8081 \
    KEZ_SIG_DB=/var/lib/kez/sig.db \
    KEZ_SIG_LOG_FORMAT=json \
    KEZ_RELAY_KEY=/var/lib/kez/relay.key \
    KEZ_RELAY_HTTP=0.0.0.0:9102 \
    KEZ_RELAY_LOG_FORMAT=json
EXPOSE 8080 8081 4002/tcp 4002/udp 9102
# The servers stop gracefully on SIGTERM, which "docker stop" sends.
STOPSIGNAL SIGTERM
CMD ["kez-chat-server"]
