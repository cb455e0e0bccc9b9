# clipapp on a GPU host: docker build -t clipapp . &&
#   docker run --gpus all -p 7860:7860 -v clipapp-cache:/cache -v clipapp-data:/data clipapp
# The weight cache (/cache) and the indexes/adapters (/data) live on volumes, so a new container reuses them.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    CLIPAPP_STATE_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# requirements.txt is the runtime lock only: no Ray, optuna, TensorBoard or test tools (extras, see pyproject.toml).
COPY requirements.txt .
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install -r requirements.txt
COPY app.py ./
COPY clipapp/ clipapp/
COPY assets/ assets/

VOLUME ["/cache", "/data"]
EXPOSE 7860
# /health answers once the model is loaded (a first start may download weights: hence the start period).
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=4); sys.exit(0 if r.status == 200 else 1)"]
# Inside the container the app must listen on all interfaces; publish the port to choose who reaches it.
CMD ["/opt/venv/bin/python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
