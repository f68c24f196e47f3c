//! Images that app updates pulled and then rolled back from. After the
//! rollback the failed image has no name left (the reference points at the
//! previous image again) and nothing runs it, so `app update` removes it at
//! once; when it cannot (a container still uses it, it got another name,
//! podman refuses), the app's record remembers it and `app remove --purge`
//! tries again. Never an error: a leftover image costs space, not the app.

use crate::host::podman::Podman;

/// What became of an image hostctl tried to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposal {
    /// Removed from podman's storage.
    Removed,
    /// Not there any more.
    Gone,
    /// Kept; why, in a sentence.
    Kept(String),
}

/// Removes image `id` from podman's storage unless it has a name or a
/// container (running or not) uses it; says what became of it.
pub fn remove_unused(podman: &dyn Podman, id: &str) -> Disposal {
    let img = match podman.image(id) {
        Ok(Some(img)) => img,
        Ok(None) => return Disposal::Gone,
        Err(e) => return Disposal::Kept(format!("looking it up failed: {e:#}")),
    };
    if let Some(tags) = img.repo_tags.as_ref().filter(|t| !t.is_empty()) {
        return Disposal::Kept(format!("it is named {}", tags.join(", ")));
    }
    match podman.containers_of_image(&img.id) {
        Ok(users) if !users.is_empty() => {
            return Disposal::Kept(format!("container {} uses it", users.join(", ")));
        }
        Ok(_) => {}
        Err(e) => return Disposal::Kept(format!("listing its containers failed: {e:#}")),
    }
    match podman.remove_image(&img.id) {
        Ok(()) => Disposal::Removed,
        Err(e) => Disposal::Kept(format!("podman did not remove it: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::testing::container;
    use crate::host::podman::{fake_image, FakePodman};

    #[test]
    fn an_unused_nameless_image_is_removed_and_anything_else_is_kept_with_the_reason() {
        let p = FakePodman::new();
        p.state.lock().unwrap().images.insert("id2".into(), fake_image("id2", "sha256:d2"));
        assert_eq!(remove_unused(&p, "id2"), Disposal::Removed);
        assert_eq!(p.calls(), ["rmi id2"]);
        assert_eq!(remove_unused(&p, "id2"), Disposal::Gone);

        // A container uses it: not even asked.
        let mut img = fake_image("id3", "sha256:d3");
        p.state.lock().unwrap().images.insert("id3".into(), img.clone());
        p.state.lock().unwrap().containers.insert("dbg".into(), container("dbg", "id3", "exited"));
        assert_eq!(remove_unused(&p, "id3"), Disposal::Kept("container dbg uses it".into()));
        assert_eq!(p.calls().len(), 1);

        // It has a name again (someone tagged it): not ours to remove.
        img.repo_tags = Some(vec!["localhost/mine:1".into()]);
        p.state.lock().unwrap().containers.clear();
        p.state.lock().unwrap().images.insert("id3".into(), img);
        assert_eq!(remove_unused(&p, "id3"), Disposal::Kept("it is named localhost/mine:1".into()));

        // podman refuses: kept, with podman's words.
        p.state.lock().unwrap().images.insert("id4".into(), fake_image("id4", "sha256:d4"));
        p.state.lock().unwrap().remove_errors.insert("id4".into(), "image is in use by a container".into());
        let Disposal::Kept(why) = remove_unused(&p, "id4") else { panic!("removed") };
        assert!(why.starts_with("podman did not remove it:") && why.contains("in use by a container"), "{why}");
    }
}
