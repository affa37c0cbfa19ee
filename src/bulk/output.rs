//! Where export files live: `{dir}/{tenant}/{job}/{Type}-{part}.ndjson` on the local
//! filesystem. A part is appended to, made durable (`fsync`) before its length is saved
//! with the job's progress, and cut back to that saved length when a job resumes.

use std::path::{Path, PathBuf};

use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use uuid::Uuid;

use crate::store::BulkFileRow;
use crate::tenant::TenantId;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The file system refused (full disk, permissions); the kind only, never the path's
    /// contents.
    #[error("export output: {0}")]
    Io(std::io::ErrorKind),
    /// A part to resume is shorter than its saved length: `bulk.dir` must be storage every
    /// server running exports shares.
    #[error("export output: a file of the job is missing from the export directory")]
    Lost,
    /// S3 refused or could not be reached (the reason, never a key or a body).
    #[error("export output: {0}")]
    S3(&'static str),
    /// A stored location that is not one Hearth writes (never followed).
    #[error("export output: unexpected file location")]
    BadLocation,
}

impl From<std::io::Error> for OutputError {
    fn from(e: std::io::Error) -> Self {
        OutputError::Io(e.kind())
    }
}

fn job_dir(root: &Path, tenant: &TenantId, job: Uuid) -> PathBuf {
    root.join(tenant.as_str()).join(job.to_string())
}

/// The file of a stored location (`{Type}-{part}.ndjson`, nothing else).
pub fn file_path(
    root: &Path,
    tenant: &TenantId,
    job: Uuid,
    location: &str,
) -> Result<PathBuf, OutputError> {
    let safe = location.ends_with(".ndjson")
        && location
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !location.starts_with('.');
    if !safe {
        return Err(OutputError::BadLocation);
    }
    Ok(job_dir(root, tenant, job).join(location))
}

/// Remove a job's files (expired or cancelled).
pub async fn remove_job(root: &Path, tenant: &TenantId, job: Uuid) -> Result<(), OutputError> {
    match fs::remove_dir_all(job_dir(root, tenant, job)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One part being appended to.
pub struct PartWriter {
    file: BufWriter<File>,
    path: PathBuf,
    /// Index of this part's row in the job's file list.
    row: usize,
    lines: i64,
    bytes: u64,
}

impl PartWriter {
    /// Continue the job's last part if it is of `resource_type` (cut back to its saved
    /// length: lines written after the last saved page are written again), else start
    /// part 1 of the type.
    pub async fn resume_or_start(
        root: &Path,
        tenant: &TenantId,
        job: Uuid,
        resource_type: &str,
        files: &mut Vec<BulkFileRow>,
    ) -> Result<PartWriter, OutputError> {
        match files.last() {
            Some(last) if last.resource_type == resource_type => {
                let path = file_path(root, tenant, job, &last.location)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .await?;
                let saved = u64::try_from(last.bytes).unwrap_or(0);
                // Shorter than saved: the file was lost (another server's disk, a wiped
                // volume). Padding it would hand out a corrupt file; the job fails instead.
                if file.metadata().await?.len() < saved {
                    return Err(OutputError::Lost);
                }
                file.set_len(saved).await?;
                file.seek(std::io::SeekFrom::Start(saved)).await?;
                Ok(PartWriter {
                    file: BufWriter::with_capacity(1 << 16, file),
                    path,
                    row: files.len() - 1,
                    lines: last.lines,
                    bytes: saved,
                })
            }
            _ => Self::next_part(root, tenant, job, resource_type, files).await,
        }
    }

    /// Start the type's next part (the first, or the one after a full part).
    pub async fn next_part(
        root: &Path,
        tenant: &TenantId,
        job: Uuid,
        resource_type: &str,
        files: &mut Vec<BulkFileRow>,
    ) -> Result<PartWriter, OutputError> {
        let part = files
            .iter()
            .filter(|f| f.resource_type == resource_type)
            .map(|f| f.part)
            .max()
            .unwrap_or(0)
            + 1;
        let seq = files.iter().map(|f| f.seq).max().unwrap_or(0) + 1;
        let location = format!("{resource_type}-{part}.ndjson");
        let path = file_path(root, tenant, job, &location)?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).await?;
        }
        let file = File::create(&path).await?;
        files.push(BulkFileRow {
            seq,
            resource_type: resource_type.to_owned(),
            part,
            location,
            lines: 0,
            bytes: 0,
        });
        Ok(PartWriter {
            file: BufWriter::with_capacity(1 << 16, file),
            path,
            row: files.len() - 1,
            lines: 0,
            bytes: 0,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// One resource, one line: stored JSON is written as it is, unless it holds a line
    /// break (outside strings JSON may; NDJSON may not), when it is made compact.
    pub async fn write_line(&mut self, json: &str) -> Result<(), OutputError> {
        let compact;
        let json = if json.contains('\n') {
            compact = serde_json::from_str::<serde_json::Value>(json)
                .map_err(|_| OutputError::Io(std::io::ErrorKind::InvalidData))?
                .to_string();
            compact.as_str()
        } else {
            json
        };
        self.file.write_all(json.as_bytes()).await?;
        self.file.write_all(b"\n").await?;
        self.lines += 1;
        self.bytes += json.len() as u64 + 1;
        Ok(())
    }

    /// Make what was written durable.
    pub async fn sync(&mut self) -> Result<(), OutputError> {
        self.file.flush().await?;
        self.file.get_ref().sync_data().await?;
        Ok(())
    }

    /// Put this part's durable length into the job's file list (saved with the progress).
    pub fn record(&self, files: &mut [BulkFileRow]) {
        if let Some(row) = files.get_mut(self.row) {
            row.lines = self.lines;
            row.bytes = self.bytes as i64;
        }
    }

    /// Make the part durable and close it; its path (for the upload).
    pub async fn finish(mut self) -> Result<PathBuf, OutputError> {
        self.sync().await?;
        Ok(self.path)
    }

    pub fn location(&self, files: &[BulkFileRow]) -> Option<String> {
        files.get(self.row).map(|f| f.location.clone())
    }
}
