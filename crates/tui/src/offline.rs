//! [`FlowControl`] over the session store alone, for a console opened without a
//! proxy (`ConsoleOptions::control` is `None`): what changes only the session —
//! edit, mark, comment, duplicate, revert, delete — works on recorded flows; what
//! needs the proxy says so.

use std::sync::Arc;

use periscope_control::{
    apply_edit, CertificateChoice, ControlError, FlowControl, FlowEdit, Injection, MessageDecision,
    Options, OptionsUpdate,
};
use periscope_flow::store::FlowStore;
use periscope_flow::{Flow, FlowId};

pub struct StoreControl {
    store: Arc<FlowStore>,
}

/// Why an action that needs the proxy is refused.
pub const NO_PROXY: &str = "this console runs without a proxy";

impl StoreControl {
    pub fn new(store: Arc<FlowStore>) -> Self {
        StoreControl { store }
    }

    fn stored(&self, id: FlowId) -> Result<Flow, ControlError> {
        self.store
            .get(id)
            .map_err(store_error)?
            .ok_or(ControlError::NotFound(id))
    }

    fn needs_proxy(id: FlowId, what: &'static str) -> ControlError {
        ControlError::NotPossible {
            id,
            what,
            why: NO_PROXY.to_owned(),
        }
    }
}

fn store_error(error: impl std::fmt::Display) -> ControlError {
    ControlError::Store(error.to_string())
}

impl FlowControl for StoreControl {
    fn flow(&self, id: FlowId) -> Result<Flow, ControlError> {
        self.stored(id)
    }

    fn flows_in_flight(&self) -> Vec<Flow> {
        Vec::new()
    }

    fn resume(&self, id: FlowId) -> Result<(), ControlError> {
        Err(Self::needs_proxy(id, "resumed"))
    }

    fn resume_all(&self) -> usize {
        0
    }

    fn kill(&self, id: FlowId) -> Result<(), ControlError> {
        Err(Self::needs_proxy(id, "killed"))
    }

    fn kill_all(&self) -> usize {
        0
    }

    fn edit(&self, id: FlowId, edit: FlowEdit) -> Result<Flow, ControlError> {
        let mut flow = self.stored(id)?;
        apply_edit(&mut flow, &edit)?;
        if edit.request.is_none() && edit.response.is_none() {
            // A mark or a comment is the user's note, not a change of the exchange.
            if let Some(marked) = edit.marked {
                self.store.set_marked(id, marked).map_err(store_error)?;
            }
            if let Some(comment) = &edit.comment {
                self.store.set_comment(id, comment).map_err(store_error)?;
            }
            return Ok(flow);
        }
        self.store
            .replace_edited(&flow)
            .map_err(store_error)?
            .ok_or(ControlError::NotFound(id))
    }

    fn replay(&self, id: FlowId) -> Result<FlowId, ControlError> {
        Err(Self::needs_proxy(id, "replayed"))
    }

    fn duplicate(&self, id: FlowId) -> Result<FlowId, ControlError> {
        self.store
            .duplicate(id)
            .map_err(store_error)?
            .map(|copy| copy.id)
            .ok_or(ControlError::NotFound(id))
    }

    fn revert(&self, id: FlowId) -> Result<Flow, ControlError> {
        if self.store.original(id).map_err(store_error)?.is_none() {
            self.stored(id)?;
            return Err(ControlError::NotPossible {
                id,
                what: "reverted",
                why: "it was never edited".into(),
            });
        }
        self.store
            .revert(id)
            .map_err(store_error)?
            .ok_or(ControlError::NotFound(id))
    }

    fn delete(&self, id: FlowId) -> Result<(), ControlError> {
        if self.store.delete(id).map_err(store_error)? {
            Ok(())
        } else {
            Err(ControlError::NotFound(id))
        }
    }

    fn clear(&self) -> Result<(), ControlError> {
        self.store.clear().map_err(store_error)
    }

    fn choose_client_certificate(
        &self,
        id: FlowId,
        _choice: CertificateChoice,
    ) -> Result<(), ControlError> {
        Err(Self::needs_proxy(id, "answered"))
    }

    fn decide_message(&self, id: FlowId, _decision: MessageDecision) -> Result<(), ControlError> {
        Err(Self::needs_proxy(id, "decided"))
    }

    fn inject_message(&self, id: FlowId, _message: Injection) -> Result<(), ControlError> {
        Err(Self::needs_proxy(id, "written to"))
    }

    fn options(&self) -> Options {
        Options::default()
    }

    fn set_options(&self, _update: OptionsUpdate) -> Result<Options, ControlError> {
        Err(ControlError::InvalidOption(format!(
            "intercepting needs the proxy: {NO_PROXY}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn store_only_actions_work_and_proxy_ones_say_why_not() {
        let store = Arc::new(FlowStore::temporary().unwrap());
        let flow = fixtures::flow("GET", "example.com", "/", Some(200));
        store.insert(&flow).unwrap();
        let control = StoreControl::new(Arc::clone(&store));
        let marked = control
            .edit(
                flow.id,
                FlowEdit {
                    marked: Some(true),
                    comment: Some("look".into()),
                    ..FlowEdit::default()
                },
            )
            .unwrap();
        assert!(marked.marked && !marked.annotations.modified);
        let stored = store.get(flow.id).unwrap().unwrap();
        assert!(stored.marked);
        assert_eq!(stored.annotations.comment, "look");
        assert!(!stored.annotations.modified, "a mark is not an edit");

        let edit = crate::editor::parse(crate::editor::Part::ResponseStatus, b"404 Gone").unwrap();
        let edited = control.edit(flow.id, edit).unwrap();
        assert_eq!(edited.response.as_ref().unwrap().status, 404);
        assert!(store.get(flow.id).unwrap().unwrap().annotations.modified);
        let reverted = control.revert(flow.id).unwrap();
        assert_eq!(reverted.response.as_ref().unwrap().status, 200);
        assert!(control.revert(flow.id).is_err(), "nothing left to revert");

        let copy = control.duplicate(flow.id).unwrap();
        assert_ne!(copy, flow.id);
        assert_eq!(store.count(None).unwrap(), 2);
        control.delete(copy).unwrap();
        assert_eq!(store.count(None).unwrap(), 1);

        let error = control.replay(flow.id).unwrap_err().to_string();
        assert!(error.contains(NO_PROXY), "{error}");
        assert!(control.resume(flow.id).is_err());
        assert!(control.set_options(OptionsUpdate::default()).is_err());
    }
}
