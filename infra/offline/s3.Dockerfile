# Stand-in for minio/minio where no MinIO server can be installed: moto's S3-compatible
# server (in-memory), listening on 9000 like MinIO's API. Used by infra/docker-compose.offline.yml
# under the service name `minio`, so every endpoint stays http://minio:9000.
ARG BASE_IMAGE=hotlap/base:local
FROM ${BASE_IMAGE}
ARG MOTO_SPEC="moto[server]>=5,<6"
RUN python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install -q --no-cache-dir --disable-pip-version-check "$MOTO_SPEC" \
 && useradd --uid 10002 --user-group --no-create-home --shell /usr/sbin/nologin s3
ENV PATH=/opt/moto/bin:$PATH \
    PYTHONUNBUFFERED=1
USER s3
EXPOSE 9000
CMD ["moto_server", "-H", "0.0.0.0", "-p", "9000"]
