"""faircalib.service: the job service's base layer, imported by both faircalib.workers and
faircalib.orchestrator (which import nothing of each other's in this direction): artifact storage
(`storage`: s3:// and file://, manifests, checksums), the embedded local S3 server (`seaweed`), local
state paths (`paths`) and the error types the layers share (`errors`). See docs/architecture.md."""
