//! Target choice.

use super::*;

#[test]
fn previous_stable_skips_revisions_never_confirmed() {
    let workload = graphql("3.242.1");
    let choice = choose(&target("type: PreviousStable"), &workload, t(0));
    let Ok(Choice::Restore(to)) = choice else {
        panic!("expected a restore, got {choice:?}");
    };
    assert_eq!((to.number, to.hash.as_str()), (1, "h3.240.0"));
}

#[test]
fn previous_stable_is_refused_when_the_stable_revision_was_pruned() {
    let mut workload = graphql("3.242.1");
    workload.revisions.remove(0);
    let why = choose(&target("type: PreviousStable"), &workload, t(0)).expect_err("refused");
    assert!(why.contains("no stable revision"), "{why}");
    assert!(why.contains("revisions kept: 2, 3"), "{why}");
}

#[test]
fn a_named_revision_that_was_pruned_is_refused() {
    let workload = graphql("3.242.1");
    let why = choose(&target("{type: Revision, revision: 7}"), &workload, t(0)).expect_err("gone");
    assert!(why.contains("revision 7 is not kept"), "{why}");
    let choice = choose(&target("{type: Revision, revision: 2}"), &workload, t(0));
    assert!(matches!(choice, Ok(Choice::Restore(r)) if r.number == 2));
}

#[test]
fn image_tag_picks_the_revision_running_it() {
    let workload = graphql("3.242.1");
    let choice = choose(
        &target("{type: ImageTag, imageTag: 3.241.0}"),
        &workload,
        t(0),
    );
    assert!(matches!(choice, Ok(Choice::Restore(r)) if r.number == 2));
    let choice = choose(
        &target("{type: ImageTag, imageTag: 3.242.1}"),
        &workload,
        t(0),
    );
    assert!(matches!(choice, Ok(Choice::AlreadyThere(r)) if r.number == 3));
    // A prefix of a tag is not the tag.
    let choice = choose(
        &target("{type: ImageTag, imageTag: '3.24'}"),
        &workload,
        t(0),
    );
    assert!(choice.is_err());
}

#[test]
fn undo_since_takes_the_newest_revision_older_than_the_window() {
    let workload = graphql("3.242.1");
    let choice = choose(&target("{type: UndoSince, since: 24h}"), &workload, t(0));
    assert!(
        matches!(choice, Ok(Choice::Restore(r)) if r.number == 2),
        "{choice:?}"
    );
    let choice = choose(&target("{type: UndoSince, since: 48h}"), &workload, t(0));
    assert!(
        matches!(choice, Ok(Choice::Restore(r)) if r.number == 1),
        "{choice:?}"
    );
    // Nothing changed in the last 30 minutes: already there.
    let choice = choose(&target("{type: UndoSince, since: 30m}"), &workload, t(0));
    assert!(
        matches!(choice, Ok(Choice::AlreadyThere(r)) if r.number == 3),
        "{choice:?}"
    );
    let why = choose(&target("{type: UndoSince, since: 100h}"), &workload, t(0))
        .expect_err("every revision is newer");
    assert!(why.contains("pruned"), "{why}");
}
