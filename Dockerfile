# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a minimal, non-root image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/kontinuous ./cmd/kontinuous

# The local executor runs stage commands with git available; the runtime
# image carries git, ca-certificates and a shell for `sh -c` stages.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kontinuous \
 && useradd --system --uid 10001 --gid kontinuous --home-dir /data --shell /usr/sbin/nologin kontinuous \
 && mkdir -p /data && chown kontinuous:kontinuous /data
COPY --from=build /out/kontinuous /usr/local/bin/kontinuous
USER 10001:10001
ENV KONTINUOUS_LISTEN=0.0.0.0:3005 \
    KONTINUOUS_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 3005
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/kontinuous", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/kontinuous"]
