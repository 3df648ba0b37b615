# The kubescrape node agent. Build: docker build -t kubescrape:0.1.0 .
# Deploy: kubescrape manifests --image kubescrape:0.1.0 | kubectl apply -f -
FROM python:3.11-slim

# No .pyc writes (the DaemonSet runs with a read-only root filesystem) and unbuffered logs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY kubescrape ./kubescrape
RUN pip install . && rm -rf /src

# Same uid/gid as runAsUser in the generated DaemonSet.
RUN groupadd --system --gid 10001 kubescrape \
    && useradd --system --uid 10001 --gid kubescrape --no-create-home --shell /usr/sbin/nologin kubescrape \
    && mkdir -p /var/lib/kubescrape/spool /etc/categraf/conf/input.prometheus \
    && chown -R kubescrape:kubescrape /var/lib/kubescrape
USER 10001:10001
WORKDIR /var/lib/kubescrape

EXPOSE 9101
ENTRYPOINT ["kubescrape", "run", "--config-dir", "/etc/categraf/conf"]
CMD ["--listen", "0.0.0.0:9101", "--spool-dir", "/var/lib/kubescrape/spool"]
