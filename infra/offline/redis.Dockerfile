# Stand-in for the official redis:7 image, built from Debian's redis-server (7.0.x) on the
# locally built Debian base. Used by infra/docker-compose.offline.yml.
ARG BASE_IMAGE=hotlap/base:local
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
# Like the official image: listen on all interfaces of the container, no protected mode.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"]
