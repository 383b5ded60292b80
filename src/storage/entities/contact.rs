//! `contacts`: one row per (session, contact id); `seq` is the contact's last change.
//! Primary key (session_id, contact_id).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contacts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub contact_id: String,
    pub display_name: String,
    pub phone: Option<String>,
    pub matrix_id: Option<String>,
    /// The seq of the contact's last change.
    pub seq: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
