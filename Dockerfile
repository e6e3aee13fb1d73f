# One image for every role: `wispgate serve` (embedded) or `wispgate radius|rater|relay|projector|api`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY rating rating
COPY ledger ledger
COPY projections projections
COPY adapters adapters
COPY api api
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["wispgate"]
CMD ["serve"]
