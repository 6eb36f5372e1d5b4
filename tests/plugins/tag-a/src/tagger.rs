// The filter shared by `tag-a` and `tag-b`, which define `TAG`.

use wasp_sdk::{Action, Direction, Filter, Message, RequestHead};

pub struct Tagger;

impl Filter for Tagger {
    type Connection = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Tagger)
    }

    fn on_open(&mut self, _conn: u64, _head: &RequestHead) {}

    fn on_message(&mut self, _: &mut (), dir: Direction, msg: Message) -> Action {
        let Message::Text(text) = msg else {
            return Action::Forward;
        };
        let arrow = match dir {
            Direction::ClientToUpstream => '>',
            Direction::UpstreamToClient => '<',
        };
        Action::Replace(Message::Text(format!("{TAG}{arrow}{text}")))
    }
}

wasp_sdk::export!(filter: Tagger);
