//! The mount table, `/proc/self/mountinfo`, read in one place: the snapshot cache asks
//! which overlays stack its snapshots, a run's cleanup what is mounted under its
//! directory, the crun driver whether the host is a hybrid cgroup one.

use std::path::PathBuf;

/// One line of mountinfo, the fields the executor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// The file system type (`overlay`, `cgroup2`, ...).
    pub fs_type: String,
    /// The super block's options as written (`lowerdir=...,upperdir=...`), still
    /// escaped: a path inside them is unescaped with [`unescape`] once split out.
    pub super_options: String,
}

/// The calling process's mounts.
pub fn read() -> std::io::Result<Vec<MountInfo>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Parses mountinfo text; lines not of its form are skipped.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPER_OPTS`
            let (head, tail) = line.split_once(" - ")?;
            let mount_point = head.split(' ').nth(4)?;
            let mut tail = tail.split(' ');
            let fs_type = tail.next()?;
            let super_options = tail.nth(1).unwrap_or("");
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: fs_type.to_owned(),
                super_options: super_options.to_owned(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space) in a path field.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(Ok(v)) = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .map(|d| u8::from_str_radix(d, 8))
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape(r"/tab\011x"), "/tab\tx");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
        // A backslash before multibyte text is kept, not cut through.
        assert_eq!(unescape("/x\\é"), "/x\\é");
    }

    #[test]
    fn lines_give_mount_point_type_and_options() {
        let table = parse(
            "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
             35 25 0:30 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n\
             90 22 0:50 / /run/with\\040space rw - overlay overlay rw,lowerdir=/a\\040b:/c\n\
             not a mountinfo line\n",
        );
        assert_eq!(table.len(), 3);
        assert_eq!(
            table[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(table[1].fs_type, "cgroup2");
        assert_eq!(table[2].mount_point, PathBuf::from("/run/with space"));
        assert_eq!(table[2].super_options, r"rw,lowerdir=/a\040b:/c");
    }
}
