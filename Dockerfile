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

# The local executor runs stage commands inside this container, so the
# runtime image carries what common `command` stages call: git, a shell
# (sh and bash), make, curl, jq, ssh, tar/gzip/unzip/xz and ca-certificates.
# Language toolchains (go, node, ...) and docker are not included: use the
# kubernetes executor (each stage names its image) or build an image FROM
# this one that adds them (README, "Docker image"). bubblewrap sandboxes
# command stages (--local-isolation); in a container it needs user
# namespaces (README, "Isolation").
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git bash make curl jq openssh-client tar gzip unzip xz-utils bubblewrap \
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
