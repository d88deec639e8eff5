//! Which POSLog elements this reader knows, and what the text of each means where it stands
//! (pure: no reading).

/// The elements this module reads. Everything else is [`Tag::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    Transaction,
    RetailTransaction,
    ControlTransaction,
    OtherTransaction,
    RetailStoreId,
    BusinessUnit,
    UnitId,
    WorkstationId,
    SequenceNumber,
    BusinessDayDate,
    Date,
    BeginDateTime,
    EndDateTime,
    ReceiptDateTime,
    CurrencyCode,
    LineItem,
    Sale,
    Return,
    Tender,
    ItemId,
    PosIdentity,
    PosItemId,
    Description,
    RegularSalesUnitPrice,
    ActualSalesUnitPrice,
    Quantity,
    SalesMode,
    Total,
    Customer,
    CustomerId,
    LoyaltyAccount,
    LoyaltyCard,
    PrimaryAccountNumber,
    LoyaltyId,
    TransactionLink,
    Other,
}

pub(super) fn tag(local: &[u8]) -> Tag {
    match local {
        b"Transaction" => Tag::Transaction,
        b"RetailTransaction" => Tag::RetailTransaction,
        b"ControlTransaction" => Tag::ControlTransaction,
        b"RetailStoreID" => Tag::RetailStoreId,
        b"BusinessUnit" => Tag::BusinessUnit,
        b"UnitID" => Tag::UnitId,
        b"WorkstationID" => Tag::WorkstationId,
        b"SequenceNumber" => Tag::SequenceNumber,
        b"BusinessDayDate" => Tag::BusinessDayDate,
        b"Date" => Tag::Date,
        b"BeginDateTime" => Tag::BeginDateTime,
        b"EndDateTime" => Tag::EndDateTime,
        b"ReceiptDateTime" => Tag::ReceiptDateTime,
        b"CurrencyCode" => Tag::CurrencyCode,
        b"LineItem" => Tag::LineItem,
        b"Sale" => Tag::Sale,
        b"Return" => Tag::Return,
        b"Tender" => Tag::Tender,
        b"ItemID" => Tag::ItemId,
        b"POSIdentity" => Tag::PosIdentity,
        b"POSItemID" => Tag::PosItemId,
        b"Description" => Tag::Description,
        b"RegularSalesUnitPrice" => Tag::RegularSalesUnitPrice,
        b"ActualSalesUnitPrice" => Tag::ActualSalesUnitPrice,
        b"Quantity" => Tag::Quantity,
        b"SalesMode" => Tag::SalesMode,
        b"Total" => Tag::Total,
        b"Customer" => Tag::Customer,
        b"CustomerID" => Tag::CustomerId,
        b"LoyaltyAccount" => Tag::LoyaltyAccount,
        b"LoyaltyCard" => Tag::LoyaltyCard,
        b"PrimaryAccountNumber" => Tag::PrimaryAccountNumber,
        b"LoyaltyID" => Tag::LoyaltyId,
        b"TransactionLink" => Tag::TransactionLink,
        other if other.ends_with(b"Transaction") => Tag::OtherTransaction,
        _ => Tag::Other,
    }
}

/// What the text of an element is, given where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Store,
    BusinessUnit,
    UnitId,
    Workstation,
    Sequence,
    BusinessDay,
    Begin,
    End,
    Receipt,
    Currency,
    GrandTotal,
    ExternalId,
    ItemId,
    PosItemId,
    Description,
    RegularPrice,
    ActualPrice,
    Quantity,
    SalesMode,
}

impl Field {
    /// The element name used in reject messages.
    pub(super) fn element(self) -> &'static str {
        match self {
            Field::Store => "RetailStoreID",
            Field::BusinessUnit => "BusinessUnit",
            Field::UnitId => "UnitID",
            Field::Workstation => "WorkstationID",
            Field::Sequence => "SequenceNumber",
            Field::BusinessDay => "BusinessDayDate",
            Field::Begin => "BeginDateTime",
            Field::End => "EndDateTime",
            Field::Receipt => "ReceiptDateTime",
            Field::Currency => "CurrencyCode",
            Field::GrandTotal => "Total",
            Field::ExternalId => "CustomerID",
            Field::ItemId => "ItemID",
            Field::PosItemId => "POSItemID",
            Field::Description => "Description",
            Field::RegularPrice => "RegularSalesUnitPrice",
            Field::ActualPrice => "ActualSalesUnitPrice",
            Field::Quantity => "Quantity",
            Field::SalesMode => "SalesMode",
        }
    }
}

/// The field an element's text fills, from its path inside the `Transaction` (pure).
pub(super) fn role(path: &[Tag]) -> Option<Field> {
    use Tag::*;
    let field = match path {
        [Transaction, RetailStoreId] => Field::Store,
        [Transaction, BusinessUnit] => Field::BusinessUnit,
        [Transaction, BusinessUnit, UnitId] => Field::UnitId,
        [Transaction, WorkstationId] => Field::Workstation,
        [Transaction, SequenceNumber] => Field::Sequence,
        [Transaction, BusinessDayDate] | [Transaction, BusinessDayDate, Date] => Field::BusinessDay,
        [Transaction, BeginDateTime] => Field::Begin,
        [Transaction, EndDateTime] => Field::End,
        [Transaction, ReceiptDateTime] | [Transaction, RetailTransaction, ReceiptDateTime] => Field::Receipt,
        [Transaction, CurrencyCode] => Field::Currency,
        [Transaction, RetailTransaction, Total] => Field::GrandTotal,
        [Transaction, RetailTransaction, Customer, CustomerId]
        | [Transaction, RetailTransaction, LoyaltyAccount, CustomerId]
        | [Transaction, RetailTransaction, LoyaltyAccount, LoyaltyCard, PrimaryAccountNumber] => Field::ExternalId,
        [Transaction, RetailTransaction, between @ .., LoyaltyId] if !between.contains(&TransactionLink) => {
            Field::ExternalId
        }
        [Transaction, RetailTransaction, LineItem, Sale | Return, leaf] => match leaf {
            ItemId => Field::ItemId,
            Description => Field::Description,
            RegularSalesUnitPrice => Field::RegularPrice,
            ActualSalesUnitPrice => Field::ActualPrice,
            Quantity => Field::Quantity,
            SalesMode => Field::SalesMode,
            _ => return None,
        },
        [Transaction, RetailTransaction, LineItem, Sale | Return, PosIdentity, PosItemId] => Field::PosItemId,
        _ => return None,
    };
    Some(field)
}
