# One image for the user-code gRPC server, dagster-webserver and dagster-daemon (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/faceit-etl
WORKDIR /opt/faceit-etl

COPY pyproject.toml constraints.txt README.md ./
COPY faceit_etl ./faceit_etl
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --create-home --uid 10001 faceit \
    && mkdir -p /opt/faceit-etl/.faceit-etl /backups \
    && chown -R faceit /opt/faceit-etl /backups
# The stack's instance file (PostgreSQL storage) becomes DAGSTER_HOME/dagster.yaml.
COPY docker/dagster.yaml docker/workspace.yaml ./

USER faceit
EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "faceit_etl.definitions"]
